import { Command, CommanderError } from 'commander';
import { GatewayError } from '../client/errors.js';
import { VERSION } from '../version.js';
import { specForm } from './commands/agent.js';
import { type CliContext, type RegisterCommands, UsageError } from './context.js';

// The AWS SDK (push --direct) warns on every process start under Node 20; users must not see it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/**
 * Every command group, each registering itself from its own file in ./commands,
 * loaded only when one of its commands runs (or for help): the agent daemon runs
 * for months and must not carry the bulk CLI's AWS SDK, database drivers and
 * schemas in memory.
 */
const GROUPS: Array<{ commands: readonly string[]; load: () => Promise<{ register: RegisterCommands }> }> = [
  { commands: ['put', 'exists', 'get', 'health'], load: () => import('./commands/objects.js') },
  { commands: ['push'], load: () => import('./commands/push.js') },
  { commands: ['retry'], load: () => import('./commands/retry.js') },
  { commands: ['trigger'], load: () => import('./commands/trigger.js') },
  { commands: ['sessions'], load: () => import('./commands/sessions.js') },
  { commands: ['agent'], load: () => import('./commands/agent.js') },
];

/** The program with the groups `argv` needs: the one naming its first word, or all of them (help, a typo). */
export async function buildProgram(ctx: CliContext, argv: readonly string[] = []): Promise<Command> {
  const program = new Command('s3up')
    .description('s3up client: upload to an s3up gateway (or S3 directly with push --direct)')
    .version(VERSION, '-v, --version')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: (s) => ctx.stdout.write(s), writeErr: (s) => ctx.stderr.write(s) });
  const named = GROUPS.filter((g) => g.commands.includes(argv[0] ?? ''));
  for (const g of named.length > 0 ? named : GROUPS) (await g.load()).register(program, ctx);
  const configure = (cmd: Command) => {
    cmd.exitOverride().configureOutput({ writeOut: (s) => ctx.stdout.write(s), writeErr: (s) => ctx.stderr.write(s) });
    for (const sub of cmd.commands) configure(sub);
  };
  for (const cmd of program.commands) configure(cmd);
  return program;
}

/** Run `s3up <argv>` and return the exit code (0 ok, 1 failed, 2 usage). */
export async function runCli(
  argv: string[],
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const ctx: CliContext = { stdout: out, stderr: err, env, exitCode: 0 };
  const args = specForm(argv);
  const program = await buildProgram(ctx, args);
  if (args.length === 0) {
    program.outputHelp({ error: true });
    return 2;
  }
  try {
    await program.parseAsync(args, { from: 'user' });
    return ctx.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help' ? 0 : 2;
    }
    if (e instanceof UsageError) {
      err.write(`s3up: ${e.message}\n`);
      return 2;
    }
    if (e instanceof GatewayError) {
      err.write(`s3up: ${e.errorCode}: ${e.message}${e.requestId ? ` (request ${e.requestId})` : ''}\n`);
      return 1;
    }
    throw e;
  }
}

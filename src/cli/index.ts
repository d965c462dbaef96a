import { Command, CommanderError } from 'commander';
import { GatewayError } from '../client/errors.js';
import { VERSION } from '../version.js';
import * as agent from './commands/agent.js';
import * as objects from './commands/objects.js';
import * as push from './commands/push.js';
import * as retry from './commands/retry.js';
import * as sessions from './commands/sessions.js';
import * as trigger from './commands/trigger.js';
import { type CliContext, type RegisterCommands, UsageError } from './context.js';

// The AWS SDK (push --direct) warns on every process start under Node 20; users must not see it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Every command group, each registering itself from its own file in ./commands. */
const GROUPS: RegisterCommands[] = [objects.register, push.register, retry.register, trigger.register, sessions.register, agent.register];

export function buildProgram(ctx: CliContext): Command {
  const program = new Command('s3up')
    .description('s3up client: upload to an s3up gateway (or S3 directly with push --direct)')
    .version(VERSION, '-v, --version')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: (s) => ctx.stdout.write(s), writeErr: (s) => ctx.stderr.write(s) });
  for (const register of GROUPS) register(program, ctx);
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
  const program = buildProgram(ctx);
  if (argv.length === 0) {
    program.outputHelp({ error: true });
    return 2;
  }
  try {
    await program.parseAsync(agent.specForm(argv), { from: 'user' });
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

import { AppError, ErrorCode } from '../errors.js';

/** S3's limit for a whole key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;
export const MAX_SEGMENT_BYTES = 255;

// C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

function invalid(reason: string): AppError {
  return new AppError(ErrorCode.INVALID_PATH, `invalid path: ${reason}`);
}

function check(form: string, label: string): void {
  if (form.length === 0) throw invalid('empty');
  if (CONTROL.test(form)) throw invalid(`control character${label}`);
  if (form.includes('\\')) throw invalid(`backslash${label}`);
  if (form.startsWith('/')) throw invalid(`absolute path${label}`);
  if (/^[A-Za-z]:/.test(form)) throw invalid(`drive letter${label}`);
  for (const seg of form.split('/')) {
    if (seg === '') throw invalid(`empty segment${label}`);
    if (seg === '.' || seg === '..') throw invalid(`"${seg}" segment${label}`);
    if (seg.trim() === '') throw invalid(`blank segment${label}`);
    if (Buffer.byteLength(seg, 'utf8') > MAX_SEGMENT_BYTES) throw invalid(`segment longer than ${MAX_SEGMENT_BYTES} bytes`);
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decode every run of %XX escapes as UTF-8; a stray "%" stays, so one bad
 * escape cannot hide the others (decodeURIComponent gives up on the whole
 * string instead). Escapes that are not valid UTF-8 (overlong forms such as
 * %c0%ae for ".", lone continuation bytes) refuse the path: a later decoder
 * might read them as "." or "/".
 */
function lenientDecode(s: string): string {
  return s.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    try {
      return UTF8.decode(Buffer.from(run.replaceAll('%', ''), 'hex'));
    } catch {
      throw invalid('a percent-escape is not valid UTF-8');
    }
  });
}

/** Enough for any real path; more distinct spellings than this is an attack. */
const MAX_SPELLINGS = 64;

/**
 * Validate a client-supplied relative path and return its canonical (NFC) form.
 * The path is checked as given and in every spelling reachable by NFC/NFKC
 * normalization and repeated percent-decoding (in any order), so that no
 * spelling of "..", "/" or "\" slips through to a store, proxy or tool that
 * decodes or normalizes later.
 */
export function validateClientPath(input: unknown): string {
  if (typeof input !== 'string') throw invalid('must be a string');
  if (!input.isWellFormed()) throw invalid('not valid Unicode');
  check(input, '');
  const nfc = input.normalize('NFC');
  const seen = new Set<string>([input]);
  const queue: Array<[string, string]> = [[input, '']];
  for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
    const [form, label] = item;
    const next: Array<[string, string]> = [
      [form.normalize('NFC'), label || ' (after Unicode normalization)'],
      [form.normalize('NFKC'), label || ' (after Unicode normalization)'],
      [lenientDecode(form), ' (after percent-decoding)'],
    ];
    for (const [f, l] of next) {
      if (seen.has(f)) continue;
      if (seen.size >= MAX_SPELLINGS) throw invalid('too many layers of encoding');
      seen.add(f);
      check(f, l);
      queue.push([f, l]);
    }
  }
  return nfc;
}

/** Where a client's objects live: {path_prefix}{client}/ */
export function clientPrefix(pathPrefix: string, client: string): string {
  return `${pathPrefix}${client}/`;
}

/** Validate `path` and build the full storage key under the client's prefix. */
export function objectKey(pathPrefix: string, client: string, path: unknown): { path: string; key: string } {
  const rel = validateClientPath(path);
  const key = `${clientPrefix(pathPrefix, client)}${rel}`;
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) throw invalid(`the full key would exceed ${MAX_KEY_BYTES} bytes`);
  return { path: rel, key };
}

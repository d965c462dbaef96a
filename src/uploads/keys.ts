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

function tryDecode(s: string): string | undefined {
  if (!s.includes('%')) return undefined;
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/**
 * Validate a client-supplied relative path and return its canonical (NFC) form.
 * The path is checked as given, NFC- and NFKC-normalized, and percent-decoded
 * (once and twice), so that no spelling of "..", "/" or "\" slips through to a
 * store or a proxy that decodes or normalizes later.
 */
export function validateClientPath(input: unknown): string {
  if (typeof input !== 'string') throw invalid('must be a string');
  if (!input.isWellFormed()) throw invalid('not valid Unicode');
  const nfc = input.normalize('NFC');
  const forms: Array<[string, string]> = [
    [input, ''],
    [nfc, ''],
    [input.normalize('NFKC'), ' (after Unicode normalization)'],
  ];
  const once = tryDecode(input);
  if (once !== undefined) {
    forms.push([once, ' (after percent-decoding)'], [once.normalize('NFKC'), ' (after percent-decoding)']);
    const twice = tryDecode(once);
    if (twice !== undefined) forms.push([twice, ' (after percent-decoding)']);
  }
  for (const [form, label] of forms) check(form, label);
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

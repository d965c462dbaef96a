import { AppError, ErrorCode } from '../errors.js';

/** RFC 9110 media type: type "/" subtype, then optional parameters; printable ASCII only. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const PARAM = `\\s*;\\s*${TOKEN}=(?:${TOKEN}|"(?:[^"\\\\\\x00-\\x1f\\x7f]|\\\\[\\x20-\\x7e])*")`;
const MEDIA_TYPE = new RegExp(`^${TOKEN}/${TOKEN}(?:${PARAM})*\\s*$`);

/**
 * The content type an upload declares, checked at admission for every
 * protocol: it becomes a response header on every download, so a value with
 * CR/LF, control or non-ASCII characters (which would make every GET fail) is
 * refused with 400 before anything is stored. Empty means "not given".
 */
export function validateContentType(value: unknown): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string' || value.length > 255 || !MEDIA_TYPE.test(value)) {
    throw new AppError(ErrorCode.INVALID_REQUEST, 'content type must be a media type such as "image/jpeg" (printable ASCII, at most 255 characters)');
  }
  return value.trim();
}

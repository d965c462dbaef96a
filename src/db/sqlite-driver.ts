import { createRequire } from 'node:module';
import type SQLite from 'better-sqlite3';

/**
 * The SQLite driver for the running Node.js. better-sqlite3 12 (built from
 * source for Node 20) aborts the process on Node 24 when a statement is
 * collected (`Assertion failed: (env) != nullptr` in `Statement::~Statement`,
 * upstream WiseLibs/better-sqlite3#1515, closed without a fix in 12.x);
 * better-sqlite3 13 fixes it and ships Node-API prebuilds, but needs Node 22
 * or later and crashes on Node 20. Both are dependencies (13 under the alias
 * `better-sqlite3-13`, which needs no compiler) and the major version picks
 * one. Same API, same file format.
 */
export type SqliteConstructor = typeof SQLite;

const require = createRequire(import.meta.url);
let driver: SqliteConstructor | undefined;

export function sqliteDriverName(nodeVersion: string = process.versions.node): 'better-sqlite3' | 'better-sqlite3-13' {
  return Number(nodeVersion.split('.')[0]) >= 22 ? 'better-sqlite3-13' : 'better-sqlite3';
}

/** Load the driver (once); only a process that opens a SQLite file pays for it. */
export function sqliteDriver(): SqliteConstructor {
  driver ??= require(sqliteDriverName()) as SqliteConstructor;
  return driver;
}

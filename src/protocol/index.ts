/**
 * The MinIO KMS wire protocol (`kms-wire.md`): proto3 primitives, the message tables and their
 * codec, command framing, the command catalogue and the error catalogue.
 */

export * from '../errors.js';
export * from './pb.js';
export * from './schema.js';
export * from './json.js';
export * from './messages.js';
export * from './frames.js';
export * from './commands.js';

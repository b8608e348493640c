/** docs/errors.md lists the error catalogue (src/errors.ts) as it is: every code, status and message. */
import { test } from 'node:test';
import { ERRORS, type ErrorCode } from '../../src/errors.js';
import { checkGenerated } from '../helpers/generated-doc.js';

/** The first block of the catalogue is the wire contract (kms-wire.md §3); its messages never change. */
const WIRE_CONTRACT = new Set<ErrorCode>([
  'ERR_NOT_ALLOWED',
  'ERR_ENCLAVE_EXISTS',
  'ERR_ENCLAVE_NOT_FOUND',
  'ERR_KEY_EXISTS',
  'ERR_KEY_NOT_FOUND',
  'ERR_POLICY_NOT_FOUND',
  'ERR_IDENTITY_NOT_FOUND',
  'ERR_DECRYPT',
]);

test('docs/errors.md is the error catalogue', () => {
  const rows = (Object.entries(ERRORS) as [ErrorCode, readonly [number, string]][])
    .sort(([a, [sa]], [b, [sb]]) => sa - sb || a.localeCompare(b))
    .map(
      ([code, [status, message]]) =>
        `| ${status} | \`${code}\` | ${message.replace(/\|/g, '\\|')} | ${WIRE_CONTRACT.has(code) ? 'wire contract' : ''} |`,
    );
  checkGenerated('docs/errors.md', 'catalogue', ['| status | code | message | |', '|---:|---|---|---|', ...rows].join('\n'));
});

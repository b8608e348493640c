/**
 * The brief, seeded run of every property-based fuzz target inside `npm test` (the targets and
 * their properties: frames.ts, protobuf.ts, policy.ts, config.ts, identity.ts). One file, so one
 * process: each process costs a few hundred ms of CPU before the first input.
 *
 * `npm run fuzz` runs the same targets for 1,000,000 inputs (test/fuzz/main.ts); a failure here
 * prints its replay command.
 */
import { registerFuzzTests } from '../helpers/fuzz.js';
import { configTargets } from './config.js';
import { frameTargets } from './frames.js';
import { identityTargets } from './identity.js';
import { policyTargets } from './policy.js';
import { protobufTargets } from './protobuf.js';

registerFuzzTests([...frameTargets, ...protobufTargets, ...policyTargets, ...configTargets, ...identityTargets]);

/** The brief, seeded run of the policy fuzzers inside `npm test` (targets and properties: ./policy.ts). */
import { registerFuzzTests } from '../helpers/fuzz.js';
import { policyTargets } from './policy.js';

registerFuzzTests(policyTargets);

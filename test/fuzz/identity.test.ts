/** The brief, seeded run of the API key and identity fuzzers inside `npm test` (targets and properties: ./identity.ts). */
import { registerFuzzTests } from '../helpers/fuzz.js';
import { identityTargets } from './identity.js';

registerFuzzTests(identityTargets);

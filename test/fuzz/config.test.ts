/** The brief, seeded run of the configuration fuzzers inside `npm test` (targets and properties: ./config.ts). */
import { registerFuzzTests } from '../helpers/fuzz.js';
import { configTargets } from './config.js';

registerFuzzTests(configTargets);

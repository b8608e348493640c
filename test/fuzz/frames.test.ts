/** The brief, seeded run of the frame fuzzers inside `npm test` (targets and properties: ./frames.ts). */
import { registerFuzzTests } from '../helpers/fuzz.js';
import { frameTargets } from './frames.js';

registerFuzzTests(frameTargets);

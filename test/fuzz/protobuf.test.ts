/** The brief, seeded run of the protobuf fuzzers inside `npm test` (targets and properties: ./protobuf.ts). */
import { registerFuzzTests } from '../helpers/fuzz.js';
import { protobufTargets } from './protobuf.js';

registerFuzzTests(protobufTargets);

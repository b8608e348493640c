// ESLint: typescript-eslint's recommended rules, plus the layering of src/ (CONTRIBUTING.md):
// each folder may import only the folders below it, so that the import graph stays one-way.
// (Import cycles between files are checked by test/unit/layering.test.ts.)
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** What each folder of src/ may not import (relative paths from inside it). */
const LAYERS = {
  crypto: ['identity', 'protocol', 'store', 'hsm', 'kms', 'client', 'config', 'server', 'kes', 'cli'],
  identity: ['protocol', 'store', 'hsm', 'kms', 'client', 'config', 'server', 'kes', 'cli'],
  protocol: ['store', 'hsm', 'kms', 'client', 'config', 'server', 'kes', 'cli'],
  store: ['identity', 'protocol', 'hsm', 'kms', 'client', 'config', 'server', 'kes', 'cli'],
  config: ['crypto', 'protocol', 'store', 'hsm', 'kms', 'client', 'server', 'kes', 'cli'],
  client: ['store', 'hsm', 'kms', 'server', 'kes', 'cli'],
  kms: ['hsm', 'client', 'config', 'server', 'kes', 'cli'],
  hsm: ['kms', 'server', 'kes', 'cli'],
  server: ['cli'],
  kes: ['cli'],
};

const layering = Object.entries(LAYERS).map(([folder, forbidden]) => ({
  files: [`src/${folder}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          {
            group: forbidden.flatMap((f) => [`../${f}/*`, `../../${f}/*`]),
            message: `src/${folder} sits below these folders and must not import them (see CONTRIBUTING.md, "Layers")`,
          },
        ],
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'test/interop/', 'deploy/helm/', 'test/etcd/', 'bench/go/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        console: 'readonly',
        process: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        URLSearchParams: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
        queueMicrotask: 'readonly',
        performance: 'readonly',
        AbortController: 'readonly',
        AbortSignal: 'readonly',
        TextEncoder: 'readonly',
        TextDecoder: 'readonly',
        structuredClone: 'readonly',
      },
    },
    rules: {
      // Unused names fail the type check already (noUnusedLocals/Parameters); `_x` marks intent.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Promises that nobody awaits must be marked `void` on purpose.
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always'],
      'no-var': 'error',
      'prefer-const': 'error',
    },
  },
  {
    // Tests read JSON documents and protocol answers whose shape the assertions then check.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  ...layering,
);

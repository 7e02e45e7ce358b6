// ESLint for the TypeScript sources, tests and benchmarks (flat config, typescript-eslint's
// recommended rules). `npm run lint` runs it with Prettier's check; .ci/run runs that.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'bundle/**',
      'out/**',
      'node_modules/**',
      'test/e2e/node_modules/**',
      'test/e2e/node24/**',
      'webview/dist/**',
      'media/**',
      'engines/**',
      'scratch/**',
      '**/*.js',
      '**/*.mjs',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      // Unused names are errors unless marked as deliberately unused with a leading underscore.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      // const where every name of a destructuring can be; `let [H, W, C]` with two reassigned stays let.
      'prefer-const': ['error', { destructuring: 'all' }],
    },
  },
  {
    // Sizes a reader can hold in mind (ARCHITECTURE.md, "Rules"); blank lines and comments count.
    files: ['src/**/*.ts', 'webview/**/*.ts'],
    rules: {
      'max-lines-per-function': ['error', { max: 100 }],
      'max-lines': ['error', { max: 500 }],
    },
  },
  {
    // Keras configs, tfjs model.json and h5wasm objects are untyped JSON and HDF5 handles read
    // field by field with checks; typing them as any is the honest type there.
    files: [
      'src/core/model/formats/keras.ts',
      'src/core/model/formats/kerasTopology.ts',
      'src/core/model/formats/kerasLayers.ts',
      'src/core/model/formats/tfjs.ts',
      'src/core/export/export.ts',
      'examples/train.ts',
    ],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);

/**
 * @attnkit/testing: attnkit's dev-only test support (DESIGN.md "Tests": never in a package's
 * src/, never a dependency of a published package). Imported from source by vitest (see
 * @attnkit/vitest-config's aliases); README.md lists what is here.
 */

export * from './chromium.js';
export * from './conformance.js';
export * from './expect.js';
export * from './flash.js';
export * from './gc.js';
export * from './gradients.js';
export * from './large-logits.js';
export * from './native.js';
export * from './nonfinite.js';
export * from './page.js';
export * from './poison.js';
export * from './sage.js';
export * from './webgpu.js';

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * V8's `gc()` without starting the process with --expose-gc: tests that check what a
 * collection gives back (a FinalizationRegistry safety net, pool counts once garbage is gone)
 * call it. The flag set at run time makes `gc` visible in contexts created afterwards.
 */
export function exposedGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

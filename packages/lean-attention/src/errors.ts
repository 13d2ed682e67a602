import { AttnkitError } from '@attnkit/tensor';

/**
 * A KV cache's page pool has too few free pages for an append. Thrown before anything is
 * written, so the cache is as it was; free pages (`removeSequence`) or build a larger pool.
 */
export class CacheFullError extends AttnkitError {
  override name = 'CacheFullError';
  /** Pages the append needed beyond those the sequence already holds. */
  readonly pagesNeeded: number;
  /** Pages free in the pool when the append was refused. */
  readonly pagesFree: number;
  constructor(message: string, argument: string, pagesNeeded: number, pagesFree: number) {
    super(message, argument);
    this.pagesNeeded = pagesNeeded;
    this.pagesFree = pagesFree;
  }
}

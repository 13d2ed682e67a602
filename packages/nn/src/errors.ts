import { AttnkitError } from '@attnkit/tensor';

/**
 * Autograd misuse: a backward through a graph an earlier backward already freed, or a gradient
 * asked of a value that does not require one. Names the op at fault.
 */
export class GraphError extends AttnkitError {
  override name = 'GraphError';
}

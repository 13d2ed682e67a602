import { AttnkitError } from '@attnkit/tensor';

/**
 * A device worker of a tiling-AllReduce run died, failed or stopped making progress. The run
 * is rejected, every worker of the group terminated and the shared buffers dropped; the group
 * is closed (create a new one).
 */
export class DeviceWorkerError extends AttnkitError {
  override name = 'DeviceWorkerError';
  /** The device (worker index) at fault; -1 when the caller's own watchdog fired. */
  readonly device: number;
  /** exit: the worker thread exited; error: it threw; timeout: no progress for timeoutMs. */
  readonly reason: 'exit' | 'error' | 'timeout';
  constructor(message: string, device: number, reason: 'exit' | 'error' | 'timeout') {
    super(message, 'devices');
    this.device = device;
    this.reason = reason;
  }
}

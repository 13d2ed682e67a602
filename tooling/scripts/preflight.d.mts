export const APT_PACKAGES: string[];
export const DEFAULT_CHROMIUM: string;
export interface PreflightFacts {
  platform: string;
  env: Record<string, string | undefined>;
  root: boolean;
  chromium: boolean;
  libs: { egl: boolean; eglMesa: boolean; gles: boolean; dri: boolean };
}
export interface PreflightVerdict {
  ok: boolean;
  missing: string[];
  command?: string;
  lines: string[];
}
export function preflight(facts: PreflightFacts): PreflightVerdict;
export function gatherFacts(env?: Record<string, string | undefined>): PreflightFacts;

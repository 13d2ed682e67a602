import { expect, test } from 'vitest';
import { openBackend } from './backend.js';

test('openBackend: a name it does not know is a ValueError naming --backend', async () => {
  await expect(openBackend('cuda')).rejects.toMatchObject({
    name: 'ValueError',
    argument: 'backend',
  });
});

"""python3 benchmarks/hstu/test_lengths.py: the lists below are what lengths.mjs prints
(lengths.test.mjs holds the same lists), so both sides of the benchmark time the same batch."""
import os
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ left beside the scripts in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lengths import jagged_lengths, seq_offsets  # noqa: E402


class LengthsTest(unittest.TestCase):
    def test_benchmark_batch(self):
        lengths = jagged_lengths(0, 16, 4096)
        self.assertEqual(lengths, [2593, 2048, 2505, 2347, 3005, 3164, 3308, 3377, 2982, 3238, 2552, 2248, 3899, 2884, 3523, 3400])
        self.assertEqual(seq_offsets(lengths)[-1], 47073)

    def test_odd_n(self):
        self.assertEqual(jagged_lengths(7, 5, 33), [16, 17, 33, 28, 25])
        self.assertEqual(seq_offsets([16, 17, 33, 28, 25]), [0, 16, 33, 66, 94, 119])

    def test_range(self):
        lengths = jagged_lengths(3, 4000, 9)
        self.assertEqual((min(lengths), max(lengths)), (4, 9))


if __name__ == "__main__":
    unittest.main()

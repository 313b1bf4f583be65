"""SE excitation per class (the SE paper's Fig. 6 analysis).

    python tools/visualization/se_weights.py CONFIG CHECKPOINT \
        [IMAGES ... | --dataset built-in] [--blocks B ...] [--split val] \
        [--max-images N] [--device cpu] --out DIR

Writes se_weights.png (per block, the excitation per channel averaged per
class), se_weights_specificity.png (class-specificity per block) and the
numbers as se_weights.json / se_weights_*.csv. See docs/look_inside.md.
"""
import sys

from mmsk.visualization.cli import se_weights_main

if __name__ == '__main__':
    sys.exit(se_weights_main())

"""SK attention versus object scale (the SKNet paper's analysis).

    python tools/visualization/sk_attention.py CONFIG CHECKPOINT \
        [IMAGES ... | --dataset built-in] [--scales 1.0 1.5 2.0] \
        [--unit UNIT] [--split val] [--max-images N] [--device cpu] --out DIR

Writes sk_attention_difference.png (mean attention difference per SK unit,
one line per scale), sk_attention_channels.png (per channel of one unit),
sk_attention_classes.png (per class, when the images have labels) and the
numbers as sk_attention.json / sk_attention_*.csv. See docs/look_inside.md.
"""
import sys

from mmsk.visualization.cli import sk_attention_main

if __name__ == '__main__':
    sys.exit(sk_attention_main())

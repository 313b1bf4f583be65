"""mmpretrain's tools/train.py (same arguments), with mmsk's models registered.

    python tools/train.py --help
"""
from mmsk.utils.tools import run_mmpretrain_tool

if __name__ == '__main__':
    run_mmpretrain_tool('train.py')

"""mmpretrain's tools/test.py (same arguments), with mmsk's models registered.

    python tools/test.py --help
"""
from mmsk.utils.tools import run_mmpretrain_tool

if __name__ == '__main__':
    run_mmpretrain_tool('test.py')

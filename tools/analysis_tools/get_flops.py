"""mmpretrain's tools/analysis_tools/get_flops.py (same arguments), with
mmsk's models registered and its FLOP handles (SE/SK gating, Res2Net adds).

    python tools/analysis_tools/get_flops.py CONFIG [--shape 224]

It runs the backbone and neck (``extract_feat``): the FLOPs leave out the
head, the parameter count is the whole model's.
"""
from mmsk.utils.tools import run_mmpretrain_tool

if __name__ == '__main__':
    run_mmpretrain_tool('analysis_tools/get_flops.py')

"""inference/shared"""

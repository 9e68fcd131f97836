"""sbn_ppl/comparison"""

"""sbn_ppl/base"""

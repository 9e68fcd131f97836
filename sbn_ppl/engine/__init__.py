"""sbn_ppl/engine"""

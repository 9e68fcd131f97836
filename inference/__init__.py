"""Inference and learning algorithms for the SBN (Gibbs/MCMC, wake-sleep and RWS, mean field)."""

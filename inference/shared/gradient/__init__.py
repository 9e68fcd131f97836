"""The ending every gradient method shares: a method is its math (its starting arrays, its
pure update on a batch, its per-point bound) and :func:`numpyro.gradient_kernel` turns those
into the :class:`~sbn_ppl.base.methods.Kernel` the runner drives (the step wrapper,
``get_params``, the chunked and seeded ``bound``), as optax's ``chain`` turns transformations
into one.
"""

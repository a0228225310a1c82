"""Network blocks shared by the domains. Importing this package does not import torch; its modules do.

- :mod:`scanai.nn.backend`: torch, imported in one place (a :class:`~scanai.core.errors.ModelError` with install
  advice when it is missing). Modules holding ``torch.nn.Module`` code import it at their top: the modules here
  and each domain's ``layers`` module (:mod:`scanai.kspace.layers`, :mod:`scanai.pet.layers`,
  :mod:`scanai.motion.layers`, :mod:`scanai.artifact_correction.layers`). Everything else, the domains'
  ``network`` modules included, imports them inside the functions that build or run a network: Slicer imports
  every module at start-up, and importing ``scanai`` must never import torch.
- :mod:`scanai.nn.blocks`: conv-BN-ReLU layers and the double convolution block; state-dict key maps.
- :mod:`scanai.nn.unet`: the U-Net wiring (max-pool down, up-sample, concatenate the skip, merge, head) and the
  parts of the classic symmetric U-Net. Used by the chest detector (:func:`scanai.chest.network.build_chest_network`,
  double conv-BN-ReLU blocks), the PET Ki network (:class:`scanai.pet.layers.KiNet`: one- and two-convolution
  levels, bilinear up-sampling, softplus output; loads the shipped weights through the key map
  :data:`scanai.pet.layers.KEY_MAP`) and the CT motion-artifact network
  (:class:`scanai.artifact_correction.layers.ResidualUNet2D`: residual InstanceNorm blocks plus a baseline). The
  k-space patch classifier shares the conv-BN-ReLU layers. The cine motion network keeps its own layers: a Siamese
  strided-convolution encoder shared by every frame, ConvGRUs across the image pairs and a decoder fed with pair
  features, none of which is this U-Net. Its warping and scaling-and-squaring integration stay in
  :mod:`scanai.motion.layers`, since no other network warps.

Every shipped model (``scanai/models/*.pt``, unchanged, sha256-checked) gives bit-identical outputs, gradients and
seeded initial weights with these blocks as with the per-domain layers they replaced.

**Why not MONAI** (measured with monai 1.6.1 and torch 2.13.0+cpu on 2 CPU cores): our own blocks, for three reasons.

- Exactness. No MONAI network can hold the shipped weights. ``BasicUNet`` concatenates the skip *before* the
  up-sampled features (our merge convolutions expect the opposite order), halves the channels when it up-samples
  (the chest detector goes 128 -> 96) and has a fixed five levels (the PET network has three). Set up as closely as
  possible, 10 of the chest detector's 100 tensors and 14 of the artifact network's 78 have shapes that
  ``BasicUNet`` does not have. ``UNet`` down-samples with strided convolutions instead of max-pooling: 63 of 100,
  18 of 37 and 42 of 78 tensors do not match. ``Warp`` and ``DVF2DDF`` are the same algorithms as ours but round
  differently (they scale by ``2 / (n - 1)`` after the sum): 3.8e-6 px apart for one warp, 1.1e-4 px after 7
  squarings, and 1e-6 px apart in the shipped motion network's output. That is close but not bit-identical.
  ``DVF2DDF``'s default zero padding is up to 7 px off at the border.
- Import time. Importing ``monai.networks.nets`` takes 0.31 s on top of torch's 0.98 s (``-X importtime``,
  cumulative; wall-clock medians 1.70 s against 1.27 s for ``import torch`` alone). ``monai.networks.blocks``
  takes 0.29 s. ``scanai.nn.unet`` and ``scanai.nn.blocks`` take 0.007 s.
- Install. The wheel is 1.7 MB and installs 7.1 MB (438 files). It needs ``torch>=2.8`` and ``numpy<3``, so pip
  could upgrade the torch that Slicer's PyTorch extension chose. The blocks it would replace here are about 100
  lines.
"""

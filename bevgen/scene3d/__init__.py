"""Compositional 3D-aware scene generation driven by BEV boxes (DisCoScene-style NeRF-GAN).

Modules (import them directly; this package imports nothing heavy):
    layout        SceneLayout (boxes + one camera) and builders from frames, scenarios and JSON
    data          one or more cameras of a frame dataset as square training images + layouts
    samplers      rays, slab ray-box intersection, object and background samples
    fields        object fields (modulated MLP, tri-plane) and the street background field
    compositor    merge, sort and alpha-composite object and background samples
    renderer      volume rendering and the 2D upsampler
    model         Scene3DGenerator wiring the above; discriminators: scene / object D and crops
    train         GAN training (train_scene3d, load_scene3d); edit: render + edits + GIFs
    metrics       FID / KID, object FID, box-alpha IoU (evaluate_scene3d); cli: `bevgen scene3d`
"""

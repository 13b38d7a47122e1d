"""The compared embedding methods, one module each (`relsim`, `tuned_encoder`, `attribute_baselines`,
`vision_encoders`, `perceptual`, `caption_text`) on `base.EmbeddingMethod`; `build.build_method` builds one by its
command-line name. This file imports nothing, so loading one method does not load the others' libraries."""

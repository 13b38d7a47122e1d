"""The compared methods' names, in a module without heavy imports so the CLI's `--help` stays instant."""

METHOD_NAMES = (
    "relsim",
    "tuned-clip",
    "tuned-dino",
    "clip-i",
    "dino",
    "dreamsim",
    "lpips",
    "clip-t",
    "qwen-t",
    "pixel",
    "colour-histogram",
)

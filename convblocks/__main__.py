"""``python -m convblocks``: list the registered blocks with their one-line descriptions."""

from . import BLOCKS, list_blocks

if __name__ == "__main__":
    width = max(len(n) for n in list_blocks())
    for name, desc in list_blocks().items():
        print(f"{name:<{width}}  [{BLOCKS.get(name).kind}]  {desc}")

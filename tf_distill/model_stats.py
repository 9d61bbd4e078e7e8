"""Parameter and FLOP counts of generators, counted as the paper's table (CAGAN ``Util/Calculators.py``).

FLOPs are multiply-accumulates of the synthesis convs and ToRGBs, with upsampling convs counted
at their *input* resolution (``MAP = [4, 4, 8, 8, ...]``), plus one per mapping weight and per
modulation weight. Parameters are all weights (mapping included, noise buffers excluded).
For the paper's FFHQ-256 teacher this gives 30,034,338 params and 45,124,673,536 FLOPs.
"""

import numpy as np


def generator_flops(g):
    """The CAGAN MAC count of a built or unbuilt :class:`Generator`."""
    ch = g.channels
    res = [4 * 2 ** (i // 2) for i in range(len(ch))]  # resolution at which conv i reads its input
    flops = 0
    for i in range(len(ch) - 1):
        k = g.kernel_size if (i >= 2 and i % 2 == 0) else 3  # non-up convs of the blocks use kernel_size
        flops += ch[i] * ch[i + 1] * k * k * res[i] ** 2
    flops += sum(ch[2 * i + 1] * 3 * res[2 * i + 1] ** 2 for i in range(len(ch) // 2))
    widths = g.mapping.widths
    flops += sum(a * b for a, b in zip([g.style_dim] + widths[:-1], widths))  # mapping weights
    modulated_inputs = ch[:-1] + [ch[2 * i + 1] for i in range(len(ch) // 2)]  # convs then ToRGBs
    flops += g.style_dim * sum(modulated_inputs)
    return int(flops)


def count_params(model):
    """Parameters of a model, frozen or not: every weight except the generator's noise buffers."""
    if not model.built:
        model.build()
    synthesis = getattr(model, "synthesis", model)
    buffers = {id(v) for v in getattr(synthesis, "noises", [])}
    return int(sum(np.prod(v.shape) for v in model.weights if id(v) not in buffers))


def generator_stats(g):
    """A dict with the numbers of the paper's table for one generator."""
    if not g.built:
        g.build()
    return {
        "size": g.size,
        "channels": list(g.channels),
        "params": count_params(g),
        "mapping_params": count_params(g.mapping),
        "flops": generator_flops(g),
    }

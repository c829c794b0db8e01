import numpy as np

import descent as dc


def test_public_contract(env: dc.Environment) -> None:
    x = env.parameter("contract_x", (4, 3))
    env.write(x, np.arange(12, dtype=np.float32).reshape(4, 3))

    def step(s: dc.Scope) -> None:
        a = s.read(x)
        s.write(x, dc.sin(a * 2.0 + 1.0))

    graph = env.build_graph(step)
    env.run(graph)
    expected = np.sin(np.arange(12, dtype=np.float32).reshape(4, 3) * 2 + 1)
    np.testing.assert_allclose(env.read(x), expected, rtol=1e-5, atol=1e-6)
    assert graph.kernel_count == 1
    env.run(graph)
    np.testing.assert_allclose(env.read(x), np.sin(expected * 2 + 1), rtol=1e-5, atol=1e-6)

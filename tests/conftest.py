import pytest
import torch

from tests.utils import tiny_config, tiny_model  # noqa: F401  (imported from here by test_engine / test_speculative)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: needs --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture(autouse=True, scope="session")
def _quiet_transformers():
    import transformers

    # assisted generation warns on every inner assistant.generate() call about max_length vs max_new_tokens
    transformers.logging.set_verbosity_error()


class HostSyncCounter:
    """Counts what makes the host wait for a tensor's value: `.item()`, `.tolist()`, `bool()`/`int()`/`float()` of a
    tensor (`aten._local_scalar_dense`), `nonzero` and boolean-mask indexing (data-dependent shapes).

        with HostSyncCounter() as syncs:
            decoder.round(4)
        assert syncs.events == []
    """

    def __enter__(self):
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        self.events = []
        events = self.events
        host_methods = {"tolist", "numpy"}  # item / bool / int / float reach the dispatcher as _local_scalar_dense

        class FunctionMode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if getattr(func, "__name__", "") in host_methods:
                    events.append(func.__name__)
                return func(*args, **(kwargs or {}))

        class DispatchMode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = str(func)
                if "_local_scalar_dense" in name or "nonzero" in name or "masked_select" in name:
                    events.append(name)
                elif func in (torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default) and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
                ):
                    events.append(name + " (boolean mask)")
                return func(*args, **(kwargs or {}))

        self._modes = [FunctionMode(), DispatchMode()]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        return False

"""Clear failures: a missing io_uring or feature names itself and its kernel."""

from __future__ import annotations

import errno

import pytest

import zerg
from zerg._probe import KernelFeatures, probe, require

ALL_OPS = probe().opcodes


def forged(release: tuple[int, int] = (6, 8), ops: frozenset[str] = ALL_OPS,
           error: int = 0, disabled: int = 0) -> KernelFeatures:
    return KernelFeatures(release, ops, error, disabled)


def test_this_kernel_passes() -> None:
    feats = probe()
    assert feats.error == 0
    require(feats, zerg.ReactorConfig())


def test_no_io_uring_at_all() -> None:
    with pytest.raises(zerg.UnsupportedKernelError, match=r"io_uring is not available.*ENOSYS"):
        require(forged(release=(4, 19), ops=frozenset(), error=-errno.ENOSYS),
                zerg.ReactorConfig())


def test_io_uring_disabled_by_sysctl() -> None:
    with pytest.raises(zerg.UnsupportedKernelError, match="io_uring_disabled=2"):
        require(forged(error=-errno.EPERM, disabled=2), zerg.ReactorConfig())


def test_io_uring_blocked_by_seccomp() -> None:
    with pytest.raises(zerg.UnsupportedKernelError, match="seccomp"):
        require(forged(error=-errno.EPERM), zerg.ReactorConfig())


def test_missing_opcode_named() -> None:
    with pytest.raises(zerg.UnsupportedKernelError, match=r"IORING_OP_SEND.*Linux 5.6"):
        require(forged(ops=ALL_OPS - {"IORING_OP_SEND"}), zerg.ReactorConfig())


@pytest.mark.parametrize(
    ("release", "cfg", "match"),
    [
        ((5, 15), zerg.ReactorConfig(), "provided buffer rings.*Linux 5.19.*5.15"),
        ((5, 19), zerg.ReactorConfig(), "multishot recv.*Linux 6.0"),
        ((6, 0), zerg.ReactorConfig(), "DEFER_TASKRUN.*Linux 6.1"),
        ((6, 8), zerg.ReactorConfig(incremental_buffers=True), "IOU_PBUF_RING_INC.*Linux 6.12"),
    ],
)
def test_feature_by_release(release: tuple[int, int], cfg: zerg.ReactorConfig,
                            match: str) -> None:
    with pytest.raises(zerg.UnsupportedKernelError, match=match):
        require(forged(release=release), cfg)


def test_old_kernel_without_defer_taskrun_can_opt_out() -> None:
    require(forged(release=(6, 0)), zerg.ReactorConfig(defer_taskrun=False))


def test_engine_serve_reports_forged_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    import zerg._engine as eng

    monkeypatch.setattr(eng, "probe", lambda: forged(error=-errno.EPERM, disabled=1))

    async def handler(conn: zerg.Connection) -> None:
        pass

    engine = zerg.Engine(zerg.EngineOptions(ip="127.0.0.1", port=0))
    with pytest.raises(zerg.UnsupportedKernelError, match="io_uring_disabled=1"):
        engine.serve(handler)
    assert not engine.is_serving

"""The shipped profiles keep their hash byte for byte: a store's measurements and the
predictors fitted on them belong to a profile's hash, so a change of the schema (a new field,
a moved table, a new default) that moved one would orphan every store measured with it."""

from bfnas.bench.hardware_profile import load_profile, shipped_profiles

# Recorded from the profiles as shipped; a new profile adds its line here.
GOLDEN = {
    "jetson-orin-trt-int8": "6d1933d3606b814a",
    "local-cpu-fp32": "08f3fb0bf476771d",
    "local-cpu-int8-2t": "f82ff096cf9f2fe7",
    "local-cpu-int8": "de90e92db27dc53f",
    "rpi4-ort-int8": "a4f1bca76cf7e6b8",
    "x86-cuda-ort-int8": "03831b2b019e9c84",
    "x86-ort-trt-ep-int8": "59f9088a7409a703",
    "x86-trt-int8": "c7ff2dc4a4b46cd2",
}


def test_every_shipped_profile_keeps_its_hash():
    assert set(shipped_profiles()) == set(GOLDEN)
    assert {name: load_profile(name).hash() for name in GOLDEN} == GOLDEN


def test_the_hash_moves_with_what_is_measured():
    # Were the hash blind to settings, the golden table would guard nothing.
    base = load_profile("local-cpu-int8")
    threads = base.model_copy(
        update={
            "runtime": base.runtime.model_copy(
                update={"intra_op_threads": base.runtime.intra_op_threads + 1}
            )
        }
    )
    assert threads.hash() != GOLDEN["local-cpu-int8"]

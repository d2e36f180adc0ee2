# A record, not yet run: the two GPU tests fixed after call5, then the 1-minute video cut with
# pieces of the largest bucket, uncut, and cut with pieces as large as the bound allows, in turns.
set -uo pipefail
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/i.log 2>&1 || cat /tmp/i.log
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/soundfile-*.whl .whl/cffi-*.whl .whl/pycparser-*.whl .whl/nvidia_cudnn_frontend*.whl >>/tmp/i.log 2>&1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider -v "tests/test_gpu_long.py::test_runtime_serves_after_a_request_failed_for_its_size" "tests/test_encode.py::test_encode_on_cuda" > $OUT/tests.log 2>&1; echo "tests exit $?"; grep -E "PASSED|FAILED|passed|failed|Error" $OUT/tests.log | tail -8
timeout 90 python3 benchmarks/records/long_media_probe.py --out $OUT --cases video1m_turns 2>&1 | grep video1m | cut -c1-900

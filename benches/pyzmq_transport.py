# pip install pyzmq   (measured with pyzmq 27.3.0, libzmq 4.3.5; e.g. in a venv:
#   python3 -m venv /tmp/brigade-tests-venv && /tmp/brigade-tests-venv/bin/pip install pyzmq
# and BRIGADE_PYTHON=/tmp/brigade-tests-venv/bin/python for the transport bench)
"""libzmq's side of `cargo bench -p brigade-benches --bench transport`: the same messages
(one frame of BYTES bytes) from a PUSH in one process to a PULL in another over tcp:// on
loopback, with NULL or CURVE, WARMUP messages and then ROUNDS rounds of COUNT messages; the
receiver acknowledges each round on a second PUSH→PULL link, as brigade's bench does.

    python pyzmq_transport.py recv|send null|curve PORT BYTES COUNT ROUNDS WARMUP

The sender prints one line: the GB/s of each timed round, space-separated.
"""

import sys
import time

import zmq

def keys():
    # Fixed secret keys (Z85) so both processes know both pairs: a benchmark, not a secret.
    server_secret = b"VJOFP(ga>+0/Q#N^%CtthwuC9)dJqGq:c#xcafcf"
    client_secret = b"45a0%}gUJLK=#-1AsPah5#/48zy3+ZG1FH0=ez&?"
    return (
        (zmq.curve_public(server_secret), server_secret),
        (zmq.curve_public(client_secret), client_secret),
    )


def secure(sock, mech, server):
    if mech != "curve":
        return
    (spub, ssec), (cpub, csec) = keys()
    if server:
        sock.curve_secretkey = ssec
        sock.curve_publickey = spub
        sock.curve_server = True
    else:
        sock.curve_secretkey = csec
        sock.curve_publickey = cpub
        sock.curve_serverkey = spub


def main():
    role, mech, port, size, count, rounds, warmup = sys.argv[1:8]
    port, size, count, rounds, warmup = map(int, (port, size, count, rounds, warmup))
    ctx = zmq.Context(io_threads=1)
    data, ack = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}"
    if role == "recv":
        pull = ctx.socket(zmq.PULL)
        secure(pull, mech, server=True)
        pull.bind(data)
        back = ctx.socket(zmq.PUSH)
        back.connect(ack)
        for r in range(rounds + 1):
            for _ in range(warmup if r == 0 else count):
                pull.recv(copy=False)
            back.send(b"ack")
        time.sleep(0.2)
    else:
        push = ctx.socket(zmq.PUSH)
        secure(push, mech, server=False)
        push.connect(data)
        back = ctx.socket(zmq.PULL)
        back.bind(ack)
        payload = (bytes(range(256)) * (size // 256 + 1))[:size]
        rates = []
        for r in range(rounds + 1):
            n = warmup if r == 0 else count
            start = time.perf_counter()
            for _ in range(n):
                push.send(payload, copy=False)
            back.recv()
            if r > 0:
                rates.append(n * size / (time.perf_counter() - start) / 1e9)
        print(" ".join(f"{x:.4f}" for x in rates), flush=True)
    ctx.destroy(linger=1000)


if __name__ == "__main__":
    main()

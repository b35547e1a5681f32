"""SecAgg across OS processes, over pipes: the same party objects any transport (TCP, HTTP, a queue) carries.

A trusted setup writes the federation (config.json, directory.json, one key file per party); each client
process loads only its own key, trains when the protocol asks for its input, and keeps its state between
messages; the server drives the round and releases only the mean.
"""

import multiprocessing as mp
import tempfile

import torch

import securefl
from securefl import deploy
from securefl.session import new_session
from securefl.wire import PartyId

CLIENTS = 5


def client_process(folder: str, index: int, pipe) -> None:
    """One client machine: its own key file, the shared configuration, a byte pipe to the server."""
    party = deploy.load_party(f"{folder}/config.json", deploy.key_file(folder, PartyId.client(index)))

    def train() -> tuple[dict, float]:  # called once, at the stage that needs the update
        torch.manual_seed(index)
        return {"w": torch.randn(4, 3), "b": torch.randn(3)}, 10.0 + index

    while (message := pipe.recv()) is not None:
        pipe.send(party.handle(message, train))


if __name__ == "__main__":
    folder = tempfile.mkdtemp(prefix="securefl-fed-")
    template = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}
    config = deploy.write_federation(folder, securefl.SecAgg(threshold=0.6), template, CLIENTS, weight_bound=100.0)
    pipes, procs = {}, []
    for i in range(CLIENTS):
        ours, theirs = mp.Pipe()
        procs.append(mp.get_context("spawn").Process(target=client_process, args=(folder, i, theirs)))
        procs[-1].start()
        pipes[PartyId.client(i)] = ours
    coordinator = deploy.coordinator(config, new_session(), round_=1)
    outbox = coordinator.start()
    while outbox:
        for party, message in outbox.items():
            pipes[party].send(message)
        outbox = coordinator.step({party: pipes[party].recv() for party in outbox})
    mean, _ = deploy.release(config, coordinator.result())
    for pipe in pipes.values():
        pipe.send(None)
    for p in procs:
        p.join()
    print(f"secure mean of {CLIENTS} clients in {CLIENTS} processes: b = {mean['b'].numpy().round(4)}")

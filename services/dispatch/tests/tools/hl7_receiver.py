#!/usr/bin/env python3
"""A RIS's HL7 v2 receiver for the tests: hl7apy's MLLP server, which parses
every message in STRICT 2.5.1 validation and acknowledges it: AA when it is
valid (kept as OUT_DIR/<control id>.<arrival>.hl7), AE with the validation
error otherwise (kept in OUT_DIR/errors.txt), AR for everything with --reject.

Usage: hl7_receiver.py OUT_DIR [--reject] [--port PORT]; prints "listening
PORT" once bound to 127.0.0.1 (on a free port unless one is given)."""

import os
import sys
import threading

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractErrorHandler, AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

OUT_DIR = sys.argv[1]
REJECT = "--reject" in sys.argv[2:]
PORT = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
LOCK = threading.Lock()


def ack(incoming, code, text=""):
    control_id = ""
    try:
        control_id = incoming.split("\r")[0].split("|")[9]
    except IndexError:
        pass
    reply = Message("ACK", version="2.5.1")
    reply.msh.msh_3 = "RIS"
    reply.msh.msh_5 = "FXTRIAGE"
    reply.msh.msh_9 = "ACK^R01^ACK"
    reply.msh.msh_10 = "ACK" + control_id[:17]
    reply.msh.msh_11 = "P"
    reply.msa.msa_1 = code
    reply.msa.msa_2 = control_id
    if text:
        reply.msa.msa_3 = text[:80].replace("|", " ").replace("^", " ").replace("&", " ").replace("~", " ").replace("\\", " ")
    return reply.to_mllp()


class Oru(AbstractHandler):
    """Any message type it is registered for: validated strictly, kept."""
    def reply(self):
        if REJECT:
            return ack(self.incoming_message, "AR", "this receiver rejects everything")
        try:
            message = parse_message(self.incoming_message, validation_level=VALIDATION_LEVEL.STRICT)
            message.validate()
        except Exception as error:  # the reason goes back in the ACK
            with LOCK:
                with open(os.path.join(OUT_DIR, "errors.txt"), "a") as errors:
                    errors.write(f"{type(error).__name__}: {error}\n")
            return ack(self.incoming_message, "AE", f"{type(error).__name__}: {error}")
        control_id = message.msh.msh_10.value
        with LOCK:
            arrival = len([name for name in os.listdir(OUT_DIR) if name.startswith(control_id + ".")])
            with open(os.path.join(OUT_DIR, f"{control_id}.{arrival}.hl7"), "w") as kept:
                kept.write(self.incoming_message)
        return ack(self.incoming_message, "AA")


class Error(AbstractErrorHandler):
    def reply(self):
        with LOCK:
            with open(os.path.join(OUT_DIR, "errors.txt"), "a") as errors:
                errors.write(f"{type(self.exc).__name__}: {self.exc}\n")
        return ack(self.incoming_message, "AR", f"{type(self.exc).__name__}")


handlers = {
    "ORU^R01": (Oru,),
    "ORU^R01^ORU_R01": (Oru,),
    "OMI^O23": (Oru,),
    "OMI^O23^OMI_O23": (Oru,),
    "ERR": (Error,),
}
server = MLLPServer("127.0.0.1", PORT, handlers)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()

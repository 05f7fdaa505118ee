#!/usr/bin/env python3
"""A RIS sending to fxtriage: builds a message with hl7apy, checks it in STRICT
2.5.1 validation, sends it over MLLP and prints the acknowledgement it gets
(segments on lines).

Usage:
  hl7_send.py PORT CONTROL_ID SENDING_FACILITY ACCESSION STATUS REPORT_TIME [FRACTURE]
      a radiology report (ORU^R01) with result status STATUS (F, P, C, ...),
      and when FRACTURE (Y, N) is given, the radiologist's coded finding: an
      OBX 125605004^Fracture of bone^SCT with a yes/no value (HL7 table 0136)
  hl7_send.py --order PORT CONTROL_ID SENDING_FACILITY ACCESSION PRIORITY TIME STUDY_UID
      a new imaging order (OMI^O23) with TQ1-9 priority PRIORITY (S, A, R)"""

import socket
import sys

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

ORDER = sys.argv[1] == "--order"
arguments = sys.argv[2:] if ORDER else sys.argv[1:]
port, control_id, facility, accession, status, report_time = arguments[:6]


def send(message):
    message.validate()
    with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as connection:
        connection.sendall(message.to_mllp().encode())
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    print(answer.strip(b"\x0b\x1c\r").decode().replace("\r", "\n"))


if ORDER:
    message = Message("OMI_O23", version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT)
    message.msh.msh_3 = "RIS"
    message.msh.msh_4 = facility
    message.msh.msh_5 = "FXTRIAGE"
    message.msh.msh_6 = "FXTRIAGE"
    message.msh.msh_7 = report_time
    message.msh.msh_9 = "OMI^O23^OMI_O23"
    message.msh.msh_10 = control_id
    message.msh.msh_11 = "P"
    patient = message.add_group("OMI_O23_PATIENT")
    patient.pid.pid_3 = "SYNTHETIC"
    patient.pid.pid_5 = "SYNTHETIC^PATIENT"
    order = message.add_group("OMI_O23_ORDER")
    order.orc.orc_1 = "NW"
    order.orc.orc_2 = "P-" + accession
    order.orc.orc_3 = accession
    timing = order.add_group("OMI_O23_TIMING")
    timing.tq1.tq1_1 = "1"
    timing.tq1.tq1_9 = status
    order.obr.obr_3 = accession
    order.obr.obr_4 = "XR-EXT^XR extremity^L"
    ipc = order.add_segment("IPC")
    ipc.ipc_1 = accession
    ipc.ipc_2 = "RP-" + accession
    ipc.ipc_3 = arguments[6]
    ipc.ipc_4 = "SPS-" + accession
    send(message)
    sys.exit(0)

message = Message("ORU_R01", version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT)
message.msh.msh_3 = "RIS"
message.msh.msh_4 = facility
message.msh.msh_5 = "FXTRIAGE"
message.msh.msh_6 = "FXTRIAGE"
message.msh.msh_7 = report_time
message.msh.msh_9 = "ORU^R01^ORU_R01"
message.msh.msh_10 = control_id
message.msh.msh_11 = "P"
result = message.add_group("ORU_R01_PATIENT_RESULT")
patient = result.add_group("ORU_R01_PATIENT")
patient.pid.pid_3 = "SYNTHETIC"
patient.pid.pid_5 = "SYNTHETIC^PATIENT"
order = result.add_group("ORU_R01_ORDER_OBSERVATION")
order.obr.obr_3 = accession
order.obr.obr_4 = "XR-EXT^XR extremity^L"
order.obr.obr_22 = report_time
order.obr.obr_25 = status
order.obr.obr_32 = "4711&SMITH&JANE"
observation = order.add_group("ORU_R01_OBSERVATION")
observation.obx.obx_1 = "1"
observation.obx.obx_2 = "TX"
observation.obx.obx_3 = "REPORT^Radiology report^L"
observation.obx.obx_5 = "Transverse fracture of the distal radius."
observation.obx.obx_11 = status
if len(arguments) > 6:
    finding = order.add_group("ORU_R01_OBSERVATION")
    finding.obx.obx_1 = "2"
    finding.obx.obx_2 = "CWE"
    finding.obx.obx_3 = "125605004^Fracture of bone^SCT"
    finding.obx.obx_5 = arguments[6] + "^" + {"Y": "Yes", "N": "No"}[arguments[6]] + "^HL70136"
    finding.obx.obx_11 = status
send(message)

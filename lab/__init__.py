"""The network-namespace lab: topology, builder, faults and traffic tools.

Used by the integration tests, the demo and the benchmarks::

    from lab import Lab, seed_spec
    with Lab(seed_spec()) as lab:
        lab.start_servers()
        print(lab.new_flows(3))
"""

from lab.dhcp import DhcpEvent, DhcpWan
from lab.driver import FlowRun, HeldFlows, TrafficError
from lab.flood import Flood, FloodResult
from lab.lab import Lab
from lab.lines import Line
from lab.load import Load, LoadError, StreamResult
from lab.netns import LabCommandError, random_prefix, sweep
from lab.ptp import PtpSession, PtpWan
from lab.ra import RaServer
from lab.topology import LabSpec, LabWan, make_spec, modem_spec, seed_spec
from lab.traffic import FlowResult, HeldResult, fault_offset, outage

__all__ = [
    "Lab", "LabSpec", "LabWan", "seed_spec", "make_spec", "modem_spec", "RaServer",
    "FlowResult", "HeldResult", "FlowRun", "HeldFlows", "TrafficError", "LabCommandError",
    "outage", "fault_offset", "random_prefix", "sweep",
    "Line", "Load", "LoadError", "StreamResult", "Flood", "FloodResult",
    "DhcpWan", "DhcpEvent", "PtpWan", "PtpSession",
]

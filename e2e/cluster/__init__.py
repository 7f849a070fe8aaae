"""A real local Kubernetes control plane built from parts, with a pod runner that plays kubelet.

See README.md ("The local control plane") and DESIGN.md section 7.
"""

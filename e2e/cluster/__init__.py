"""A real local Kubernetes cluster built from parts: the control plane and one real node (containerd, kubelet).

See README.md ("The local control plane") and DESIGN.md section 7.
"""

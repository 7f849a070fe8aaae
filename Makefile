# The two commands README promises, and a few helpers. Everything installs what it needs.
.PHONY: demo test lint crds up down

demo:  ## the embedded demo: local control plane, SmolLM2, a promoted and a rolled-back canary
	scripts/demo $(ARGS)

test:  ## the whole suite: lint, types, fast tests, end-to-end on a real control plane
	scripts/test

crds:  ## regenerate crds/ and the chart's copy from the pydantic models
	$$(scripts/bootstrap)/bin/python -m model_operator.api.crd

up:    ## bring the local control plane up and print its kubeconfig
	$$(scripts/bootstrap)/bin/python -m e2e.cluster up

down:  ## take the local control plane down
	$$(scripts/bootstrap)/bin/python -m e2e.cluster down

"""Sphinx configuration of the nova-xen-stubdom documentation."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'ext'))
sys.path.insert(0, os.path.join(HERE, '..', '..'))

project = 'nova-xen-stubdom'
copyright = 'nova-xen-stubdom developers'
author = 'nova-xen-stubdom developers'

extensions = [
    # the [xen_stubdom] reference is generated from conf.py's options
    'oslo_config.sphinxext',
    # Nova-format support matrix (doc/source/support-matrix.ini)
    'support_matrix',
    # the XAPI messages the code calls, checked against the datamodel
    'xapi_subset',
]

source_suffix = '.rst'
root_doc = 'index'
exclude_patterns = ['_build']
pygments_style = 'sphinx'
html_theme = 'alabaster'
html_static_path = []

"""``python -m facejax.data.synthetic``: see facejax.data.synthetic.export."""
from facejax.data.synthetic import export

export.main()

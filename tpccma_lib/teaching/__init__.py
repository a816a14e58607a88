"""Teaching: the closed-form gap explorer behind notebook 06's sliders (``explorer``), its
ipywidgets controls (``widgets``) and notebook 02's small numerical experiments (``toy``)."""

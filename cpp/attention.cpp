// placeholder until the attention lands
